"""python -m resnetlab"""

from .cli import main

raise SystemExit(main())
