// The plugin's own version. `komoku-build` replaces this file, as it compiles, with the
// `version` of the package.json nearest to the entry file; `info` reports it.

export const PACKAGE_VERSION: string = "0.0.0";
