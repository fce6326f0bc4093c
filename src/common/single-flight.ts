// Callers asking for the same thing while it is under way share the one answer (or failure) instead
// of queueing to redo it: N stages of targets behind one portal run one SendTargets discovery, and a
// portal that black-holes costs them one timeout together, not one each after the other.

export class SingleFlight<T> {
  private readonly flights = new Map<string, Promise<T>>();

  run(key: string, fn: () => Promise<T>): Promise<T> {
    const running = this.flights.get(key);
    if (running) return running;
    const flight = fn().finally(() => {
      if (this.flights.get(key) === flight) this.flights.delete(key);
    });
    this.flights.set(key, flight);
    return flight;
  }
}
