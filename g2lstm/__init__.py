"""G2-LSTM: LSTMs with binary-valued gates (Li et al., ICML 2018), a drop-in for torch.nn.LSTM."""

from . import shard, trace
from .gumbel import gumbel_sigmoid
from .rnn import G2LSTM, G2LSTMCell
from .tasks import load

__all__ = ["G2LSTM", "G2LSTMCell", "gumbel_sigmoid", "load", "shard", "trace"]
__version__ = "0.1.0"
