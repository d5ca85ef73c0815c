"""Deployment of a trained model: export a size-m model, evaluate any checkpoint or export, serve
users one event at a time, Matryoshka funnel retrieval, and the size that fits a latency budget."""
