"""I/O only: the blob store (uploads and processed images), the Parquet lake, and their key layout."""
