"""Card-fraud scoring: transaction features with online/offline parity, training, and the stateful scorer."""

from engine.fraud.data import FraudColumns, canonical, parse_duration_us
from engine.fraud.scorer import FraudScorer, fraud_config
from engine.fraud.state import FraudState
from engine.fraud.train import FraudTrainResult, replay_state, train_fraud, transaction_matrix

__all__ = [
    "FraudColumns",
    "FraudScorer",
    "FraudState",
    "FraudTrainResult",
    "canonical",
    "fraud_config",
    "parse_duration_us",
    "replay_state",
    "train_fraud",
    "transaction_matrix",
]
