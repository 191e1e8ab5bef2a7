"""Tables: reading and writing files, schema inference, checking request columns against a schema, and the
feature matrix of checked rows."""
