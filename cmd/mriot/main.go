// Command mriot runs the mriot fleet system on one machine and manages its PKI
// and simulated devices:
//
//	mriot local                 every region in one process (what `make run` starts)
//	mriot pki init              root CA, intermediate CA, server certificate
//	mriot pki device NAME       a device certificate whose CN is NAME
//	mriot pki device NAME --renew  a new certificate for NAME (certificate rotation)
//	mriot device run --name N   a simulated device (or --count N devices)
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "mriot:", err)
		os.Exit(1)
	}
}

func contextWithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}
