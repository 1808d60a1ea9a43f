"""The REST API (FastAPI under uvicorn): uploads, image status, processed images, analytics."""
