#!/usr/bin/env -S node --conditions=source --import tsx
// The `moepp-pretrain` command: runs the TypeScript sources through tsx (no build step).
import { main } from '../src/cli.ts';

await main(process.argv);
