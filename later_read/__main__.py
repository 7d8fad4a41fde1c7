from later_read.cli import main

main()
