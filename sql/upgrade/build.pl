#!/usr/bin/perl
# build.pl INSTALL_FRAGMENT... -- UPGRADE_FRAGMENT...
#
# Writes the upgrade script to standard output: the upgrade fragments in the
# order given, with each line
#
#     -- @function loyalty.NAME     (also @procedure, @view, @table, @aggregate, @type)
#
# (and "-- @comments loyalty.NAME": only the COMMENT statements of a view,
# table or type and its columns)
# replaced by the current definition of that object taken from the install
# fragments (a function's or aggregate's every overload; functions and views
# as CREATE OR REPLACE), followed by its COMMENT statements (a relation's or
# type's columns' too). A changed function or a new table is so written once,
# in sql/install/, and an upgrade cannot end with another body than a fresh
# install. Fails on an unknown name and on a name claimed by two directives.
use strict;
use warnings;

my (@install, @upgrade);
my $list = \@install;
for (@ARGV) {
	if ($_ eq '--') { $list = \@upgrade; next; }
	push @$list, $_;
}
die "usage: build.pl INSTALL... -- UPGRADE...\n" unless @install && @upgrade;

sub slurp {
	my ($f) = @_;
	open(my $fh, '<', $f) or die "build.pl: cannot read $f: $!\n";
	local $/;
	my $s = <$fh>;
	close $fh;
	return $s;
}

# Split SQL text into statements, each with the text from its first line to
# its terminating ';' (outside quotes, dollar quotes, comments and a
# BEGIN ATOMIC ... END body, whose BEGIN/CASE ... END nest as psql counts them).
sub statements {
	my ($text) = @_;
	my @out;
	my $start = 0;
	my $i = 0;
	my $n = length $text;
	my ($prev, $depth) = ('', 0);
	while ($i < $n) {
		my $c = substr($text, $i, 1);
		pos($text) = $i;
		if ($text =~ /\G([A-Za-z_][A-Za-z_0-9]*)/gc) {
			my $word = uc $1;
			$i += length $1;
			if ($word eq 'ATOMIC' && $prev eq 'BEGIN') { $depth++; }
			elsif ($depth > 0 && ($word eq 'CASE' || $word eq 'BEGIN')) { $depth++; }
			elsif ($depth > 0 && $word eq 'END') { $depth--; }
			$prev = $word;
			next;
		}
		if ($c eq ';' && $depth > 0) { $i++; next; }
		if ($c eq '-' && substr($text, $i, 2) eq '--') {
			my $e = index($text, "\n", $i);
			$i = $e < 0 ? $n : $e + 1;
		} elsif ($c eq '/' && substr($text, $i, 2) eq '/*') {
			my $e = index($text, '*/', $i + 2);
			die "build.pl: unterminated comment\n" if $e < 0;
			$i = $e + 2;
		} elsif ($c eq "'") {
			my $e = $i + 1;
			while (1) {
				$e = index($text, "'", $e);
				die "build.pl: unterminated string\n" if $e < 0;
				if (substr($text, $e + 1, 1) eq "'") { $e += 2; next; }
				last;
			}
			$i = $e + 1;
		} elsif ($c eq '$' && $text =~ /\G(\$[A-Za-z_]*\$)/gc) {
			my $tag = $1;
			my $e = index($text, $tag, $i + length $tag);
			die "build.pl: unterminated $tag\n" if $e < 0;
			$i = $e + length $tag;
		} elsif ($c eq ';') {
			push @out, substr($text, $start, $i + 1 - $start);
			$prev = '';
			$i++;
			$start = $i;
		} else {
			$i++;
		}
	}
	return @out;
}

# name => [definition statements with comments, in install order]
my (%defs, %comments);
for my $f (@install) {
	for my $st (statements(slurp($f))) {
		# the statement proper starts at its first line that is not blank or a comment
		my @lines = split /\n/, $st, -1;
		shift @lines while @lines && $lines[0] =~ /^\s*(--.*)?$/;
		my $body = join "\n", @lines;
		if ($body =~ /^CREATE (?:OR REPLACE )?(FUNCTION|PROCEDURE|VIEW|TABLE|AGGREGATE|TYPE) loyalty\.(\w+)[\s(]/) {
			my $key = lc($1) . " $2";
			$body =~ s/^CREATE (FUNCTION|PROCEDURE|VIEW)/CREATE OR REPLACE $1/;
			push @{ $defs{$key} }, $body;
		} elsif ($body =~ /^COMMENT ON (FUNCTION|PROCEDURE|AGGREGATE) loyalty\.(\w+)\(/) {
			push @{ $comments{lc($1) . " $2"} }, $body;
		} elsif ($body =~ /^COMMENT ON (VIEW|TABLE|TYPE) loyalty\.(\w+) /) {
			push @{ $comments{lc($1) . " $2"} }, $body;
		} elsif ($body =~ /^COMMENT ON COLUMN loyalty\.(\w+)\./) {
			# a column of a view, table or type: kept under each, used by the one that exists
			push @{ $comments{"$_ $1"} }, $body for qw(view table type);
		}
	}
}

my %claimed;
for my $f (@upgrade) {
	my $text = slurp($f);
	my $lineno = 0;
	for my $line (split /^/, $text) {
		$lineno++;
		if ($line =~ /^--\s*\@comments\s+loyalty\.(\w+)\s*$/) {
			my $name = $1;
			my ($kind) = grep { $defs{"$_ $name"} } qw(view table type);
			die "build.pl: $f:$lineno: no view, table or type loyalty.$name in sql/install\n"
				unless $kind;
			die "build.pl: $f:$lineno: the comments of loyalty.$name already taken in $claimed{\"comments $name\"}\n"
				if $claimed{"comments $name"};
			$claimed{"comments $name"} = "$f:$lineno";
			print "$_\n\n" for @{ $comments{"$kind $name"} || [] };
		} elsif ($line =~ /^--\s*\@(function|procedure|view|table|aggregate|type)\s+loyalty\.(\w+)\s*$/) {
			my $key = "$1 $2";
			die "build.pl: $f:$lineno: no $1 loyalty.$2 in sql/install\n"
				unless $defs{$key};
			die "build.pl: $f:$lineno: loyalty.$2 already taken from sql/install in $claimed{$key}\n"
				if $claimed{$key};
			$claimed{$key} = "$f:$lineno";
			print "$_\n\n" for @{ $defs{$key} }, @{ $comments{$key} || [] };
		} else {
			print $line;
		}
	}
	print "\n" unless $text =~ /\n\z/;
}
