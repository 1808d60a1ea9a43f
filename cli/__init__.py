"""The ``graywave`` command line (``cli.main``) and its demo (``cli.demo``)."""
