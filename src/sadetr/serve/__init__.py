"""`sadetr serve`: the HTTP service (FastAPI) over one shared model and, optionally, a corpus index.

`service.py` owns the model and the request queue (usable without HTTP, e.g. by the browser app),
`limits.py` the request limits, `uploads.py` reading client bytes safely, `schemas.py` the typed
request/response bodies, `app.py` the FastAPI application. Needs the `sadetr[serve]` extra.
"""
