package main

import "os"

func main() {
	os.Exit(run(os.Args, os.Environ(), os.Stdout, os.Stderr))
}
