"""Raw video to features: PyAV decoding, CLIP and SlowFast extractors, offline weight loading."""
