import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Metadata } from '@grpc/grpc-js';
import { permissionDenied, unauthenticated, type StatusError } from './errors.js';

/**
 * `segment` may run inference and read models; `train` may also upload examples and run fine-tuning jobs; `admin`
 * may also change the default model (ActivateModel, StartTraining with activate). Each role includes the ones
 * before it in this list.
 */
export const ROLES = ['segment', 'train', 'admin'] as const;
export type Role = (typeof ROLES)[number];

const rank = (r: Role) => ROLES.indexOf(r);
/** Whether `have` includes `need`. */
export const roleIncludes = (have: Role, need: Role) => rank(have) >= rank(need);

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Bearer tokens from a file of `<role> <token>` lines. Tokens are kept only as SHA-256 digests and compared
 * in constant time.
 */
export class TokenAuth {
  private constructor(private readonly entries: { role: Role; digest: Buffer }[]) {}

  static fromFile(path: string): TokenAuth {
    const entries: { role: Role; digest: Buffer }[] = [];
    const lines = readFileSync(path, 'utf8').split(/\r?\n/);
    lines.forEach((raw, i) => {
      const line = raw.trim();
      if (!line || line.startsWith('#')) return;
      const [role, token, ...rest] = line.split(/\s+/);
      if (!ROLES.includes(role as Role) || !token || rest.length > 0) {
        throw new Error(`tokens file ${path} line ${i + 1}: expected "<role> <token>" with role one of ${ROLES.join(', ')}`);
      }
      if (token.length < 16) throw new Error(`tokens file ${path} line ${i + 1}: token shorter than 16 characters`);
      entries.push({ role: role as Role, digest: digest(token) });
    });
    if (entries.length === 0) throw new Error(`tokens file ${path} has no tokens`);
    return new TokenAuth(entries);
  }

  /** The role a bearer token grants, or undefined. */
  roleOf(token: string): Role | undefined {
    const d = digest(token);
    let found: Role | undefined;
    for (const e of this.entries) {
      // No early exit: time does not depend on which entry matched.
      if (timingSafeEqual(d, e.digest) && (found === undefined || rank(e.role) > rank(found))) found = e.role;
    }
    return found;
  }

  /** null when the call may proceed. */
  check(metadata: Metadata, need: Role): StatusError | null {
    const values = metadata.get('authorization');
    const header = typeof values[0] === 'string' ? values[0] : '';
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) return unauthenticated('missing "authorization: Bearer <token>" metadata');
    const role = this.roleOf(m[1]);
    if (!role) return unauthenticated('unknown token');
    if (!roleIncludes(role, need)) return permissionDenied(`this call needs the ${need} role; the token has ${role}`);
    return null;
  }
}
