"""The history model: JSON Lines events of DESIGN.md section 4, read and written as a stream."""
