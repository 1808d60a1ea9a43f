"""graywave: grayscale conversion, 16-bin histograms and analytics for photo upload waves.

The package is laid out by architecture layer; dependencies point one way, downwards:

- ``graywave.config``, ``graywave.errors``, ``graywave.records``: the settings, the one error
  hierarchy (``GraywaveError``) and the typed records (``ImageRecord``, ``RejectRecord``) that
  every layer shares.
- ``graywave.kernels``: pure array functions (NumPy/Numba on the CPU, CuPy on the GPU) and codecs.
- ``graywave.storage``: blob stores, the Parquet lake and MongoDB; I/O only, no image math.
- ``graywave.service``: the use cases as plain functions (a wave, a batch, the daily questions,
  the API's reads and writes), using kernels and storage; no Prefect, no HTTP.
- ``graywave.flows`` (Prefect flows and deployments) and ``graywave.api`` (HTTP routes) use the
  service layer and never each other. ``graywave.cli`` (the ``graywave`` command) is the
  composition root: it runs the flows, and names the API to uvicorn without importing it.

``graywave.config.Settings`` is the one configuration object; it is read from ``GRAYWAVE_*``
environment variables and passed down explicitly.
"""

__version__ = "0.1.0"
