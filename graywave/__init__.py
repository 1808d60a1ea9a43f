"""graywave: grayscale conversion, 16-bin histograms and analytics for photo upload waves.

The package is laid out by architecture layer:

- ``graywave.kernels``: pure array functions (NumPy/Numba on the CPU, CuPy on the GPU) and codecs.
- ``graywave.storage``: blob stores and the Parquet lake; I/O only, no image math.
- ``graywave.flows``: Prefect flows and tasks that compose the two, and the ``graywave`` CLI.

``graywave.config.Settings`` is the one configuration object; it is read from ``GRAYWAVE_*``
environment variables and passed down explicitly.
"""

__version__ = "0.1.0"
