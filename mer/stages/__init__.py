"""Stages: one package per pipeline step (data generation, Spark jobs, model, index, quality). Each stage is a plain
function with a typed config; stages import the base layer and one another, never the app layer."""
