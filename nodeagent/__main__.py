"""`python -m nodeagent` is `shadowmesh-agent`."""

import sys

from .cli import main

sys.exit(main())
