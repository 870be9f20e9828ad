"""sadetr: SA-DETR (Span Aware DEtection TRansformer) for video moment retrieval and highlight detection."""

__version__ = "0.2.0"
