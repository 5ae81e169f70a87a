import sys

from idm_imaging.training import main

sys.exit(main())
