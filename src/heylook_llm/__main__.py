from heylook_llm.cli import main

raise SystemExit(main())
