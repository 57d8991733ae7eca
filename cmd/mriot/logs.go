package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

func logName(stateDir, logFile string) string {
	switch logFile {
	case "":
		return filepath.Join(stateDir, "mriot.log")
	case "-":
		return "stderr"
	}
	return logFile
}

// openLog opens the JSON log destination: the logs are verbose (a line per
// saga step), so they go to <stateDir>/mriot.log unless asked otherwise.
func openLog(stateDir, logFile string) (io.Writer, func(), error) {
	if logFile == "-" {
		return os.Stderr, func() {}, nil
	}
	name := logName(stateDir, logFile)
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return nil, nil, fmt.Errorf("log dir: %w", err)
	}
	f, err := os.OpenFile(name, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("log file: %w", err)
	}
	return f, func() { _ = f.Close() }, nil
}
