import sys

from safepref.cli import main

sys.exit(main())
