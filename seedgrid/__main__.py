from seedgrid.cli import main

main()
