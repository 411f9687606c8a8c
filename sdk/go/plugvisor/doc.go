// Package plugvisor makes a HashiCorp go-plugin (v1.7) gRPC plugin a
// plugvisor plugin: lifecycle hooks, its configuration, the host API
// (key-value store, structured logs, the embedder's own services) and HTTP
// through net/http, in one call from main:
//
//	func main() {
//		if err := plugvisor.Serve(&myPlugin{}); err != nil {
//			log.Fatal(err)
//		}
//	}
//
// The value given to [Serve] is the plugin. Its hooks are the optional
// interfaces it implements: [Activator] (OnActivate), [ConfigurationChanger]
// (OnConfigurationChange) and [Deactivator] (OnDeactivate); an
// [http.Handler] (or [WithHandler]) serves the host's HTTP requests under
// /plugins/{id}/. The host calls only the hooks a plugin implements, and a
// hook that returns an error refuses, with the error's text as the message
// the operator sees.
//
// OnActivate receives the [Host]: the plugin's id, its configuration
// ([Host.LoadConfiguration] decodes it into the plugin's own struct), the
// key-value store ([Host.KV]), a [log/slog.Logger] whose records go to the
// host's log ([Host.Logger]) and the gRPC connection for the embedder's own
// services ([Host.Conn]). Fields that OnActivate sets are visible to every
// later hook, HTTP request and gRPC call without further locking: the SDK
// orders them after OnActivate's return.
//
// Everything travels over go-plugin's own machinery, so the plugin runs under
// plugvisor and under any go-plugin host that plays plugvisor's part (see
// package plugvisortest): the host API is reached with go-plugin's
// GRPCBroker.Dial, and AutoMTLS, when the host turns it on, covers it too.
package plugvisor
