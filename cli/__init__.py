"""The ``graywave`` command line: ``cli.main`` is the root command, which registers each group of
commands from its own module (``cli.wave``, ``cli.analytics``, ``cli.query``, ``cli.plot``,
``cli.token``, ``cli.lake``, ``cli.server_commands``; the top-level ones in ``cli.serving`` and
``cli.operations``) and prints any command's ``GraywaveError``; ``cli.options`` reads the arguments
they share, ``cli.common`` holds the rest; ``cli.server`` manages the local Prefect server and
``cli.demo`` generates the demo.

Before anything imports pydantic: graywave uses no pydantic plugins, and looking for them reads the
entry points of every installed package: 12 ms of each command's start-up (a query's is about 0.4 s).
An operator who wants a plugin sets ``PYDANTIC_DISABLE_PLUGINS`` (to an empty value).
"""

import os

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
