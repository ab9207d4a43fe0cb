from edgeeval.cli import main

raise SystemExit(main())
