from dicomfs.cli import main

main()
