print("cvm-cli")
