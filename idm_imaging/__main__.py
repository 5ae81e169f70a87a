import sys

from idm_imaging.cli import main

sys.exit(main())
