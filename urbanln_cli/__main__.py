from urbanln_cli.cli import main

main()
