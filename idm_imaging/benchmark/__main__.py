import sys

from idm_imaging.benchmark.run import main

sys.exit(main())
