"""The ``graywave`` command line (``cli.main``) and its demo (``cli.demo``).

Before anything imports pydantic: graywave uses no pydantic plugins, and looking for them reads the
entry points of every installed package: 12 ms of each command's start-up (a query's is about 0.4 s).
An operator who wants a plugin sets ``PYDANTIC_DISABLE_PLUGINS`` (to an empty value).
"""

import os

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
