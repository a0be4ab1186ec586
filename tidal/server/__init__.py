"""The model server: TF Serving REST and Open Inference Protocol (V2) adapters, metrics, the process."""
