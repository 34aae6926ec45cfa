from dicomfs.cli.main import main

main()
