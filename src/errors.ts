// Typed errors carried from any layer up to the gRPC surface. Each maps to one gRPC status code and
// carries a message an operator can act on (never a stack trace or a dumped child-process object).
import { status } from '@grpc/grpc-js';

export class CsiError extends Error {
  readonly code: status;
  constructor(code: status, message: string) {
    super(message);
    this.code = code;
    this.name = new.target.name;
  }
}

export class InvalidArgument extends CsiError {
  constructor(message: string) { super(status.INVALID_ARGUMENT, message); }
}
export class NotFound extends CsiError {
  constructor(message: string) { super(status.NOT_FOUND, message); }
}
export class AlreadyExists extends CsiError {
  constructor(message: string) { super(status.ALREADY_EXISTS, message); }
}
export class FailedPrecondition extends CsiError {
  constructor(message: string) { super(status.FAILED_PRECONDITION, message); }
}
export class Aborted extends CsiError {
  constructor(message: string) { super(status.ABORTED, message); }
}
export class ResourceExhausted extends CsiError {
  constructor(message: string) { super(status.RESOURCE_EXHAUSTED, message); }
}
export class OutOfRange extends CsiError {
  constructor(message: string) { super(status.OUT_OF_RANGE, message); }
}
export class Internal extends CsiError {
  constructor(message: string) { super(status.INTERNAL, message); }
}
export class Unavailable extends CsiError {
  constructor(message: string) { super(status.UNAVAILABLE, message); }
}
export class DeadlineExceeded extends CsiError {
  constructor(message: string) { super(status.DEADLINE_EXCEEDED, message); }
}
export class Unimplemented extends CsiError {
  constructor(message: string) { super(status.UNIMPLEMENTED, message); }
}

/** Turns anything thrown into a CsiError; unknown errors become INTERNAL with their message only. */
export function toCsiError(err: unknown): CsiError {
  if (err instanceof CsiError) return err;
  if (err instanceof Error) return new Internal(err.message.split('\n')[0] ?? 'internal error');
  return new Internal(String(err));
}

/** Node's errno code of a system error, if any. */
export function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof (err as { code: unknown }).code === 'string'
    ? (err as { code: string }).code
    : undefined;
}
