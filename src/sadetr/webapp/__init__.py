"""`sadetr app`: the browser app (Gradio, fully offline) over the service's shared model and queue.

`render.py` turns predictions and search hits into HTML (no Gradio), `media.py` makes videos
playable in a browser and cuts thumbnails, `ui.py` lays out the Gradio tabs and launches them.
Needs the `sadetr[app]` extra.
"""
