"""Machine learning: features, training, registry and the live model service.

- features   `feature_frame` (batch, training) and `LiveFeatures` (one bar at a time)
- cv         walk-forward folds with purging and an embargo
- metrics    accuracy, balanced accuracy, log loss, AUC, Brier, reliability bins
- train      `train_model` / `bootstrap_model` -> `TrainedModel` (artifact on disk)
- artifact   the version folder and its SHA-256 chain; `load_artifact` verifies
- registry   statuses, promote / rollback / retire / challenger, audited; `handle_command`
- service    `ModelService`: verified loading with fallback, predict, record, score, drift
- drift      PSI against training with natural-variation thresholds, accuracy decay
- shadow     champion against challenger: promotion advice
- jobs       `Retrainer` on the ML executor, `retrain_trigger` for the cron schedule
- cli        `python -m engine train` and `python -m engine models ...`

Not here: the tables (predictions, drift, model_events: the "ml" set in
`store.schema`), the strategy's use of a prediction (`engine.decide.regime`,
`engine.decide.strategy`) and the Models page's read model (`cockpit.models_views`).
`models` means ML models; the domain's value types are in `engine.domain`.
"""
