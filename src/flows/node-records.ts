// Which (target, portal, iface) node records this driver process has itself logged out of and deleted
// since it last logged in there. When every volume of a target is unstaged at once, each unstage finds
// no other user and would run `--logout` and `-o delete` again, one after another under the target
// lock (32 volumes: 64 redundant iscsiadm calls, seconds before the target can be staged again). With
// no session left in sysfs and the records known gone, there is nothing to do.
// Kept in memory on purpose: after a restart the set is empty and a redundant delete runs once, which
// is harmless (an absent record answers "not found", taken as done).

export class ForgottenNodes {
  private readonly gone = new Set<string>();

  /** after a successful logout and record delete of this node */
  forget(iqn: string, portal: string, iface: string): void {
    this.gone.add(key(iqn, portal, iface));
  }

  isForgotten(iqn: string, portal: string, iface: string): boolean {
    return this.gone.has(key(iqn, portal, iface));
  }

  /** Before this process creates the node's record again (a new login): it is no longer known gone. */
  recreated(iqn: string, portal: string, iface: string): void {
    this.gone.delete(key(iqn, portal, iface));
  }
}

function key(iqn: string, portal: string, iface: string): string {
  return `${iqn}|${portal}|${iface}`;
}
