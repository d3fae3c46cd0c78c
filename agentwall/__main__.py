import sys

from agentwall.cli import main

sys.exit(main())
