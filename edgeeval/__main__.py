from edgeeval.cli.main import main

raise SystemExit(main())
