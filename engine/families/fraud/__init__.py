"""Card-fraud scoring: transaction features with online/offline parity, training, and the stateful scorer."""

from engine.families.fraud.data import FraudColumns, canonical, parse_duration_us
from engine.families.fraud.scorer import FraudScorer
from engine.families.fraud.state import FraudState
from engine.families.fraud.train import FraudTrainResult, fraud_config, replay_state, train_fraud, transaction_matrix

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
