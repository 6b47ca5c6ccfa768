print("cvm-fuzz")
