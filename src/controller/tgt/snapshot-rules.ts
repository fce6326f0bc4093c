// When a byte copy of a volume's backing file is a point-in-time copy (pure). A reflink clone always
// is. A byte copy takes time, and tgtd serves writes meanwhile: the copy would mix blocks from
// before and after those writes. It is allowed only while nothing can write: the volume published
// nowhere (ControllerPublish waits on the volume's lock during the copy) and no initiator logged in
// to its target (a session made before an unpublish outlives its ACL).

export interface ByteCopyCheck {
  volumeId: string;
  poolDir: string;
  /** nodes the volume is published to */
  publishedTo: string[];
  /** initiators tgtd shows logged in to the volume's target */
  loggedIn: string[];
}

/** Why a byte copy of the volume would not be point-in-time, with what to configure; undefined when it may be copied. */
export function byteCopyRefusal(c: ByteCopyCheck): string | undefined {
  const users = [
    ...(c.publishedTo.length > 0 ? [`published to ${c.publishedTo.join(', ')}`] : []),
    ...(c.loggedIn.length > 0 ? [`initiator(s) ${c.loggedIn.join(', ')} logged in to its target`] : []),
  ];
  if (users.length === 0) return undefined;
  return `volume ${c.volumeId} is in use (${users.join('; ')}) and the pool ${c.poolDir} cannot make reflink copies, `
    + 'so a copy made now would mix data from before and after the writes made while copying; '
    + 'put controller.tgt.poolDir on a filesystem with reflinks (xfs made with mkfs.xfs -m reflink=1, or btrfs) '
    + 'for instant point-in-time snapshots and clones, or stop the workload and unpublish the volume first';
}
