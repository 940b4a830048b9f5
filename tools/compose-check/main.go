// Command compose-check loads Compose files the way `docker compose` does, through compose-go
// (the Compose specification's schema, interpolation, merging and its semantic checks), and
// prints the resolved project as JSON. The deploy tests read that JSON.
//
//	compose-check [-env-file FILE]... FILE...
//
// Only the given env files feed interpolation: neither the process environment nor a `.env`
// file changes the result.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	var envFiles fileList
	flag.Var(&envFiles, "env-file", "variables for interpolation (repeatable)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: compose-check [-env-file FILE]... FILE...")
		os.Exit(2)
	}
	if err := run(envFiles, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "compose-check:", err)
		os.Exit(1)
	}
}

func run(envFiles, files []string) error {
	if len(envFiles) == 0 {
		envFiles = []string{os.DevNull} // not the `.env` beside the first file
	}
	options, err := cli.NewProjectOptions(files,
		cli.WithWorkingDirectory(filepath.Dir(files[0])),
		cli.WithEnvFiles(envFiles...),
		cli.WithDotEnv,
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return err
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		return err
	}
	data, err := project.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(data, '\n'))
	return err
}
