from redisched.cli import main

raise SystemExit(main())
