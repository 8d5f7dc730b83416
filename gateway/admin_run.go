package gateway

import "context"

// Run does the admin listener's background work until ctx ends: it samples
// the targets' delivered counts (every console.SampleEvery) for the
// console's delivery chart. With admin.console off it only waits for ctx.
func (a *Admin) Run(ctx context.Context) {
	if a.console == nil {
		<-ctx.Done()
		return
	}
	a.console.Run(ctx)
}
