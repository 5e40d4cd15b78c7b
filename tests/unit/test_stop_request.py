"""distributed.StopRequest: SIGTERM / SIGINT raise while nothing needs saving, are recorded after,
and the previous handlers come back."""
import os
import signal

import pytest

from lumos_jax.train import distributed


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_raises_while_urgent_and_is_recorded_after(signum):
  before = signal.getsignal(signum)
  stop = distributed.StopRequest()
  stop.install()
  try:
    with pytest.raises(distributed.Interrupted) as raised:
      os.kill(os.getpid(), signum)
    assert raised.value.signum == signum
    stop.signal, stop.urgent = None, False
    assert not stop.agreed(check=False)
    os.kill(os.getpid(), signum)  # recorded only
    assert stop.signal == signum and stop.agreed(check=False)  # one process: every step
    assert signal.Signals(signum).name in stop.describe()
  finally:
    stop.restore()
  assert signal.getsignal(signum) == before
