from service.replay.cli import main

raise SystemExit(main())
