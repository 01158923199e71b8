// Command nattrace answers "where did my packet go?".
package main

import (
	"os"

	"github.com/nattrace/nattrace/cmd"
)

// version is set by the Makefile: -ldflags "-X main.version=...".
var version = "dev"

func main() { os.Exit(cmd.Execute(version, os.Args[1:])) }
