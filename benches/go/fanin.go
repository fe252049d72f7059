// Go's fan-in, the peer of benches/programs/chan_fanin.vasm and fanin.vasm: 64 goroutines share
// N values (N / 64 each) and send them on one channel to main, which sums them. MODE is
// `unbuffered` (a rendezvous channel: chan_fanin's shape) or `buffered` (capacity N, so no
// sender ever blocks: the analogue of fanin's mailbox).
// Usage: go build -o /tmp/gofanin benches/go/fanin.go && /tmp/gofanin MODE N
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	mode := os.Args[1]
	n, _ := strconv.Atoi(os.Args[2])
	per := n / 64
	n = per * 64
	t0 := time.Now()
	var ch chan int
	switch mode {
	case "unbuffered":
		ch = make(chan int)
	case "buffered":
		ch = make(chan int, n)
	default:
		fmt.Fprintln(os.Stderr, "MODE is unbuffered or buffered")
		os.Exit(2)
	}
	for s := 0; s < 64; s++ {
		go func() {
			for i := 1; i <= per; i++ {
				ch <- i
			}
		}()
	}
	sum := 0
	for i := 0; i < n; i++ {
		sum += <-ch
	}
	fmt.Printf("fanin %s %d result=%d us=%d\n", mode, n, sum, time.Since(t0).Microseconds())
}
