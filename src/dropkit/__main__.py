from dropkit.cli import main

main()
