// `abort` (a failed assertion, an out-of-bounds access, `unreachable`...) as a trap.
// Plugins have no host import to report the message through; the host sees the trap,
// logs it with the plugin's name and version, and answers the client with an error.
// The build passes `--use abort=<this file>/trap`, so asc imports no `env.abort`.

export function trap(message: string | null, fileName: string | null, line: u32, column: u32): void {
  unreachable();
}
